"""The change log in object storage: keys, segments, sidecars, watermarks. Knows nothing of Kafka."""
