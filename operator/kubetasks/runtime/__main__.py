"""``python -m kubetasks.runtime``: runs the task attempt described by the environment."""

from kubetasks.runtime.entry import main

raise SystemExit(main())
