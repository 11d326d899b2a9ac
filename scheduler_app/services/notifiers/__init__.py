"""Notifications of outcomes: Standard Webhooks callbacks and email, with a delivery log.

- ``announce``: the outcome-seam consumer that writes deliveries in the transaction that ends
  a task (or a workflow), each with the delivery task that will send it;
- ``deliveries``: one attempt of a delivery (``notify.deliver`` runs it), the log, redelivery;
- ``webhook`` / ``email``: the two channels; ``signing``: owners' keys and signatures;
- ``endpoints``: owners' webhook endpoints; ``receiver``: a local receiver for development.
"""
