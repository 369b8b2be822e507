"""sim room of threedmoe_ros (see the package docstring for what it may import)."""
