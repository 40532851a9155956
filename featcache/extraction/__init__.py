"""Stage one: read a data folder, run the frozen backbone once per new image, commit the vectors."""
