"""`python -m dewy.master -c dewy.ini` == `dewy-master -c dewy.ini`."""
import sys

from dewy.master.main import main

sys.exit(main())
