"""``python -m speechsr ...``: the ``speechsr`` command (see :mod:`speechsr.cli`)."""

import sys

from speechsr.cli import main

sys.exit(main())
