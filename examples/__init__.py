"""framefarm's example sketches, installed with framefarm as the package `framefarm.examples`.

From a clone, render them by path (`framefarm render examples/plasma.py`); anywhere framefarm is
installed — such as the AWS Batch images — by module (`framefarm.examples.plasma:render`).
"""
