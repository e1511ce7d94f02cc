"""SSH: the codecs of what an SSH gateway reads inside its channels (SFTP)."""
