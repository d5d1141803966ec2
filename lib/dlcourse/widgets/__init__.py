"""Interactive ipywidgets explorers for the lectures, one module per topic
(`dlcourse.widgets.conv`, `dlcourse.widgets.optim`, ...). Importing this package does
not import ipywidgets; each explorer module does."""
