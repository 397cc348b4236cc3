metadata(description="MAX31865 RTD-to-digital converter driver (SPI).", version="0.1.0")

module("max31865.py", opt=3)
