import sys

from qute.cli import main

sys.exit(main())
