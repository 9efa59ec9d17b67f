"""The sans-I/O wire format shared by the relay and its clients."""
