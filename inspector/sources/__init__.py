"""Frame sources: Kafka, OpenCV cameras, folders of recorded frames."""
