from bpfgen.cli import main
import sys
sys.exit(main())
