"""XAIExplainLib.mrml"""
