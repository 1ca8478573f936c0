import sys

from jaxcodec.cli import main

sys.exit(main())
