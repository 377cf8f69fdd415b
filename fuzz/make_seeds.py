import ssl, struct, os
def chunks(parts):
    out=b''
    for side,data in parts:
        for i in range(0,len(data),255):
            c=data[i:i+255]; out+=bytes([side,len(c)])+c
    return out
def w(target,name,parts):
    open(f'corpus/{target}/{name}','wb').write(chunks(parts))
req=b'GET /a?token=x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer s\r\n\r\n'
resp=b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'
chunked=b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n'
w('http1','keepalive',[(0,req),(1,resp),(0,b'HEAD / HTTP/1.1\r\n\r\n'),(1,b'HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n'),(0,req),(1,chunked)])
w('http1','http10',[(0,b'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'),(1,b'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok')])
up=b'GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Version: 13\r\n\r\n'
sw=b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n'
w('http1','upgrade',[(0,up),(1,sw)])
def frame(op,payload,mask):
    h=bytes([0x80|op]); n=len(payload)
    mb=0x80 if mask else 0
    if n<126: h+=bytes([mb|n])
    elif n<65536: h+=bytes([mb|126])+struct.pack('>H',n)
    else: h+=bytes([mb|127])+struct.pack('>Q',n)
    if mask:
        k=b'\x01\x02\x03\x04'; h+=k; payload=bytes(b^k[i%4] for i,b in enumerate(payload))
    return h+payload
ws_c=frame(1,b'hello',1)+frame(2,b'\x01\x02\x03',1)+frame(9,b'',1)+frame(8,struct.pack('>H',1000)+b'bye',1)
ws_s=frame(1,b'hello',0)+frame(2,b'\x01\x02\x03',0)+frame(10,b'',0)+frame(8,struct.pack('>H',1000)+b'bye',0)+frame(2,b'x'*300,0)
w('websocket','echo',[(0,ws_c),(1,ws_s)])
pre=b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
def h2f(t,fl,sid,p): return struct.pack('>I',len(p))[1:]+bytes([t,fl])+struct.pack('>I',sid)+p
settings=h2f(4,0,0,b'')
hdr=h2f(1,5,1,bytes([0x82,0x84,0x86,0x41,0x01,ord('h')]))  # GET / http :authority h
hdr3=h2f(1,5,3,bytes([0x82,0x04,0x08])+b'/missing'+bytes([0x86,0xbe]))
rs=h2f(1,4,1,bytes([0x88]))+h2f(0,1,1,b'hello')+h2f(1,5,3,bytes([0x8d]))
w('http2','prior',[(0,pre+settings+hdr+hdr3),(1,settings+h2f(4,1,0,b'')+rs)])
ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
ctx.set_alpn_protocols(['h2','http/1.1'])
inc,outb=ssl.MemoryBIO(),ssl.MemoryBIO()
o=ctx.wrap_bio(inc,outb,server_hostname='example.test')
try: o.do_handshake()
except ssl.SSLWantReadError: pass
ch=outb.read()
w('tls','clienthello',[(0,ch)])
open('/tmp/clienthello.bin','wb').write(ch)
for t,parts in [('reassembly','http'),('reassembly','tls')]:
    pass
# reassembly: control byte bit0 side, bits1-7 stray+64 (64 => 0 stray)
def rchunks(parts):
    out=b''
    for side,data in parts:
        for i in range(0,len(data),255):
            c=data[i:i+255]; out+=bytes([side|(64<<1),len(c)])+c
    return out
open('corpus/reassembly/http','wb').write(rchunks([(0,req),(1,resp),(0,up),(1,sw),(0,ws_c),(1,ws_s)]))
open('corpus/reassembly/h2','wb').write(rchunks([(0,pre+settings+hdr+hdr3),(1,settings+rs)]))
open('corpus/reassembly/tls','wb').write(rchunks([(0,ch)]))
print(len(ch))
