"""The network edge: one HTTP/1.1 codec (sans IO, `http1`) and the TLS edges for client and server, each private
Twisted or pyOpenSSL call beside the fallback to the stock path. Imports nothing of ours."""
