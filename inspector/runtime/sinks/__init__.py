"""Result sinks: Kafka (results and dead letters), JSON-lines file, overlay images."""
