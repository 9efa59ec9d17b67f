"""Media blobs: uploads of opaque ciphertext, grants, authenticated downloads, expiry."""
