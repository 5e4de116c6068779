"""`python -m headwater.services.scheduler`"""

from headwater.runtime.service import run
from headwater.services.scheduler.app import build_app
from headwater.services.scheduler.settings import SchedulerSettings

run(lambda: build_app(SchedulerSettings()))
