"""Placeholder until the CLI lands."""


def generate(*args, **kwargs):
    raise NotImplementedError


def stream_generate(*args, **kwargs):
    raise NotImplementedError
