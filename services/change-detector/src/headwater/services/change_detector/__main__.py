"""`python -m headwater.services.change_detector`"""

from headwater.runtime.service import run
from headwater.services.change_detector.app import build_app
from headwater.services.change_detector.settings import ChangeDetectorSettings

run(lambda: build_app(ChangeDetectorSettings()))
