"""The relay: sees ciphertext and the metadata it needs, nothing more.

Never imports ``tresen.client``, ``tresen.gateway`` or ``tresen.app``.
"""
