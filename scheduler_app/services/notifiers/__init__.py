"""Notifications of outcomes: Standard Webhooks callbacks and email, with a delivery log.

- ``announce``: the outcome-seam consumer that writes deliveries in the transaction that
  consumes a task's (or a workflow's) end;
- ``dispatch``: the schedulers' dispatcher, which claims due deliveries, sends them and
  records each attempt;
- ``deliveries``: the log, redelivery, the backoff between attempts;
- ``webhook`` / ``email``: the two channels; ``signing``: owners' keys and signatures;
- ``endpoints``: owners' webhook endpoints; ``receiver``: a local receiver for development.
"""
