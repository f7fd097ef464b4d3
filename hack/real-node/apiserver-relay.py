"""Relays TCP from the real node's pod network to the local API server on loopback.

The local control plane has no kube-proxy, and its API server listens on 127.0.0.1 only, so a pod
(the operator installed by `make deploy`) cannot reach it through the `kubernetes` Service. This
relay listens on the pod bridge's gateway address, which every pod on the real node reaches, and
the API server's certificate names that address (hack/cluster.sh). TLS passes through untouched.

    python3 apiserver-relay.py LISTEN_IP PORT TARGET_PORT
"""

import asyncio
import socket
import sys

IP_FREEBIND = 15  # bind before the bridge (made by the CNI plugin with the first pod) has the address


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen_ip: str, port: int, target_port: int) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((listen_ip, port))
    server = await asyncio.start_server(relay, sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
