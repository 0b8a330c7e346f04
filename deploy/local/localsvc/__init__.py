"""Local Apache Kafka broker and S3 server (s3proxy) for vecwal's tests and demo, without Docker.

Standard library only at module level. Used through deploy/local/launch.py, which puts
deploy/local on sys.path and re-exports the API:

    common    LaunchError, the loopback host, messages, log tails
    install   Maven Central downloads into $VECWAL_CACHE, the java and mvn executables
    process   free ports, spawning (tied to the parent or detached), terminating
    service   the life cycle shared by both services
    kafka     KafkaBroker and the stdlib Kafka wire probe
    s3proxy   S3Proxy
    cli       ``launch.py install|start|stop|status``
"""
