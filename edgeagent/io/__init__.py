"""The I/O thread and the pure units it owns: slots, window meter, result encoding, sockets."""
