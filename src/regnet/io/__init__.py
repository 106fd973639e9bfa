"""Reading and writing images, displacement fields and landmarks."""
