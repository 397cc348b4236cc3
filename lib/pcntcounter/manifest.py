metadata(description="Pulse input counted by a machine.Counter (ESP32 PCNT unit), with edge "
         "timestamp.", version="0.1.0")
module("pcntcounter.py")
