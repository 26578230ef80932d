"""XAIExplainLib.imaging"""
