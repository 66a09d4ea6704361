import sys

from mmconcepts.cli import main

sys.exit(main())
