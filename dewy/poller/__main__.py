"""`python -m dewy.poller --fd N`: run the poller worker on the inherited socketpair N."""

import sys

from dewy.poller.worker import main

sys.exit(main())
