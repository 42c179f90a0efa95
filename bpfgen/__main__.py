import sys

from bpfgen.cli import main

sys.exit(main())
