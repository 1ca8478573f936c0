import sys

from jaxcodec.commands import main

sys.exit(main())
