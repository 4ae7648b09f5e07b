"""`python -m gpufs.agent`: the same as the gpufs-agent console script."""
from .cli import main

raise SystemExit(main())
