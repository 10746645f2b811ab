"""Tests of the media layer: forwarding, recording, voice activity."""
