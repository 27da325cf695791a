"""Helpers for the web chat's browser tests: a real ``kaiyuan serve`` process and Debian's chromium."""
