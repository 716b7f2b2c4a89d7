import sys

from vln_gym.cli import main

sys.exit(main())
