"""Local Apache Kafka broker and S3 servers (s3proxy; SeaweedFS, with versioning and Object
Lock) for vecwal's tests and demo, without Docker.

Standard library only at module level. Used through deploy/local/launch.py, which puts
deploy/local on sys.path and re-exports the API:

    common    LaunchError, the loopback host, messages, log tails
    install   Maven Central downloads and the SeaweedFS build (Go module proxy) into
              $VECWAL_CACHE, the java, mvn and go executables
    process   free ports, spawning (tied to the parent or detached), terminating
    service   the life cycle shared by every service
    kafka     KafkaBroker and the stdlib Kafka wire probe
    s3server  S3Server: credentials, endpoint and data directory of the local S3 servers
    s3proxy   S3Proxy
    seaweedfs SeaweedFS (``weed server`` with filer and S3 gateway)
    postgres  PostgresServer (PostgreSQL 18 + pgvector, wal_level=logical; as root: run as nobody)
    connect   KafkaConnect (standalone worker, Debezium PostgresConnector) and its config
    promtool  the pinned promtool build (Go module proxy), for the alert rules' tests
    composeschema  the Compose specification's JSON schema (from the pinned compose-go module)
    helm      the pinned helm build (Go module proxy), for the chart's tests
    chroma    ChromaServer (``chroma run`` from its own venv under the cache), the chroma: sink's
              server
    milvus    MilvusServer (Milvus 2.3.5 standalone from the ``milvus`` wheel, its own venv under
              the cache; every port pinned), the milvus:http:// sink's server
    cli       ``launch.py install|start|stop|status``
"""
