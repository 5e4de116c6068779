"""`python -m headwater.sdk` is the `headwater` command."""

from headwater.sdk.cli import main

main()
