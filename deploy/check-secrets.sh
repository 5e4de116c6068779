#!/bin/sh
# Stops the compose stack before it starts while a secret still holds the placeholder of
# .env.example ("change-me-..."): those values are public. Names every such variable.
# Run by the check-secrets service with every variable of .env.example in its environment.
bad=$(env | grep -i '^[A-Za-z_][A-Za-z0-9_]*=change-me' | cut -d= -f1 | sort)
if [ -n "$bad" ]; then
    for name in $bad; do
        echo "check-secrets: $name still holds the placeholder from .env.example: set a real secret in .env" >&2
    done
    exit 1
fi
echo "check-secrets: no placeholder secrets"
