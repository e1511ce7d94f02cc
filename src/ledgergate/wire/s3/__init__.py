"""S3's wire formats, sans-IO: SigV4 request and chunk signatures (``sigv4``), the
``aws-chunked`` body framing (``chunked``) and the ``x-amz-checksum-*`` digests
(``checksums``)."""
