metadata(description="Oversampling ADC input: trimmed mean of N conversions in microvolts.",
         version="0.1.0")

module("adcin.py")
