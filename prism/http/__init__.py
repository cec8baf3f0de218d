"""HTTP and HTTP/3 blob servers and clients (reflector.md §4.4, §4.5)."""
