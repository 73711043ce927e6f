"""Delivery channels: one small module per backend behind :mod:`service.channels.base`."""
