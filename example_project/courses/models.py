"""Models of the stand-in course platform."""
