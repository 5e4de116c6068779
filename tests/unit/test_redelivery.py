"""The redelivery backoff of every service's consumers: 0.5 s doubling to 30 s unless its
settings say otherwise (headwater.runtime.messaging)."""

import pytest

from headwater.runtime import messaging
from headwater.runtime.service import Service
from headwater.runtime.settings import ServiceSettings


def test_a_service_redelivers_on_the_backoff_its_settings_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Service.create sets the process's backoff: restore it after the test.
    monkeypatch.setattr(messaging, "NAK_BASE_DELAY_S", messaging.NAK_BASE_DELAY_S)
    monkeypatch.setattr(messaging, "NAK_MAX_DELAY_S", messaging.NAK_MAX_DELAY_S)
    Service.create("test", ServiceSettings.model_construct())
    assert [messaging._backoff(n) for n in (1, 2, 3, 7, 8, 100)] == [0.5, 1, 2, 30, 30, 30]
    Service.create("test", ServiceSettings(redelivery_base_s=0.25, redelivery_cap_s=2))
    assert [messaging._backoff(n) for n in (1, 2, 3, 4, 5, 100)] == [0.25, 0.5, 1, 2, 2, 2]
