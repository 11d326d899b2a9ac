"""The dead-letter queue: inspect, replay and purge terminal failures."""
