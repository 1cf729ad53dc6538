"""Monitoring of deployed models: cheap image statistics of what is served, and the drift and
live-performance tests that compare a window of served predictions with the champion's
reference profile (its test split). Pure functions; the services store and schedule them."""
