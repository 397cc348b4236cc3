metadata(description="Non-blocking Modbus RTU and TCP master and a Modbus TCP server for "
         "asyncio.", version="0.2.0")
# mbrtu and mbtcp each need mbcore; mbrtu also umodbus.const (its CRC table)
module("mbcore.py")
module("mbrtu.py")
module("mbtcp.py")
module("mbserver.py")  # the Modbus TCP server (heatgw.bms): on its own
