"""What goes onto a board: board data files, the firmware build, and flashing."""
