import streamlit as st
st.title("3_features")
st.info("coming")
