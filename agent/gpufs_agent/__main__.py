"""`python -m gpufs_agent`: the same as the gpufs-agent console script."""
from .cli import main

raise SystemExit(main())
