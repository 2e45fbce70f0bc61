"""`python -m dewy.master -c dewy.ini` == `dewy-master -c dewy.ini`."""
import sys

from dewy.cli import master_main

sys.exit(master_main())
