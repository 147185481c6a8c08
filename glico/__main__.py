"""``python -m glico``: the same as the ``glico`` command."""
import sys

from glico.cli import main

sys.exit(main())
