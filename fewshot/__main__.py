import sys

from fewshot.cli import main

sys.exit(main())
