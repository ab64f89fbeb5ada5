"""``python -m models train|eval|list ...`` (the same as ``beamsteer models ...``)."""

import sys

from models.cli import main

sys.exit(main())
